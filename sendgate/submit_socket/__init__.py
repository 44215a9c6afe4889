"""The submit socket: an SMTP listener on a unix socket that knows its
client's uid from the kernel and forwards each session to the MTA."""
