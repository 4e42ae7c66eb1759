"""One ``@deploy`` function per concern; see playbooks/site.py for how they are composed."""
