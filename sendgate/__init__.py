"""sendgate: unprivileged RFC 6409 mail submission in front of Postfix or Sendmail.

Kept empty on purpose: the sendmail command imports this package on every
cron job and every PHP mail(), so nothing here may cost start-up time.
"""
