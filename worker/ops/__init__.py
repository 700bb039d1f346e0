"""What on-call staff use: the CLI, doctor, metrics and logs, the readers of the event log and of
customer records, and the one-machine dev stack and demo."""
