"""First contact with a bare host, as root: create the deploy account.

    pyinfra inventory/<env>.py bootstrap.py --user root

After this, deploy.py connects as the deploy account and the common role
disables root login.
"""

from services.baseline import accounts

accounts()
