"""The shipped playbooks (backup, deploy, rollback): installed as the package data of
``aura_ops.playbooks`` (see pyproject.toml); aura_ops.playbook.SHIPPED finds them."""
