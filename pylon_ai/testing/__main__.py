"""
C{python -m pylon_ai.testing}: the fake provider as a program.
"""

from pylon_ai.testing._cli import main

main()
