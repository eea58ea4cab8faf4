"""The ``localrules`` command. Each subcommand lives in its own module and imports what it needs
(TensorFlow included) only when it runs."""
