"""The HTTP receiver: signature checks, turning requests into event-log rows, the group-commit writer."""
