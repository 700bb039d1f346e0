"""The staff dashboard: server-rendered pages under /app/ on the web process, behind staff sign-in."""
