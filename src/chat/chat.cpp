// Placeholder: chat core is being written.
