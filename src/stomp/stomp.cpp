// Placeholder: the codec is being written.
#include "stomp/stomp.h"
