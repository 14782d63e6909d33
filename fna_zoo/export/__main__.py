"""`python -m fna_zoo.export ...` runs `fna-export`."""
from .cli import main

if __name__ == '__main__':
    main()
