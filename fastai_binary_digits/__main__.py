"`python -m fastai_binary_digits`: the command line, as the `fastai-binary-digits` console script"
from .cli import main

if __name__ == '__main__': raise SystemExit(main())
