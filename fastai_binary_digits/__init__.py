"Chapter 4 of the fastai book as a tool: classify any pair of MNIST digits with fastai, from scratch to `Learner`"
__version__ = '0.1.0'

import warnings
# fastai's own layers.py calls the deprecated `torch.jit.script` on import; that warning is not the user's to act on
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)

from .data import *
from .losses import *
from .models import *
from .learner import *
from .plots import *
from .model_files import *
from .demo import *  # Gradio itself is imported only when the demo runs
from .demo import __all__ as _demo_all  # (`demo` the function hides `demo` the module here)
from . import data, losses, models, learner, plots, model_files

__all__ = data.__all__ + losses.__all__ + models.__all__ + learner.__all__ + plots.__all__ + model_files.__all__ + _demo_all
