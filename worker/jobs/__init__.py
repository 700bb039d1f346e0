"""What runs in the background: the broker and its actors, event processing, the sweeper, the clock,
alert delivery and replay."""
