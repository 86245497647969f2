"""Job runners: import, augmentation and quality (purge lives with the lifecycle)."""
