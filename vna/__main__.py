"""``python -m vna`` runs the admin CLI (same as the ``vna`` command)."""

from vna.cli import main

if __name__ == "__main__":
    main()
