// Placeholder: net is being written.
