"""ceres-mail: the CERES platform's external mail server, one graph per stack (see README.md)."""

from components import program

program.run()
