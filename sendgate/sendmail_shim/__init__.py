"""The sendmail(1) command.  Kept empty: see main.py on start-up cost."""
