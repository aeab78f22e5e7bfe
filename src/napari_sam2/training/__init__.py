"""Model-making tools: fine-tuning, simulated prompts, generated data, evaluation, the demo model's recipes.

The runtime (:mod:`napari_sam2.model`, :mod:`napari_sam2.engine`, :mod:`napari_sam2.api`) never imports
this package; the command line (``napari-sam2 train``, ``evaluate``, ``demo-model``) and the plugin's
sample data do.

* :mod:`.finetune` -- :func:`train` on image + label pairs (:class:`TrainingConfig`);
* :mod:`._prompts` -- simulated clicks and boxes for training;
* :mod:`.synthetic` -- generated nuclei planes, stacks and time-lapses with ground truth;
* :mod:`.evaluate` -- held-out IoU of clicks, boxes and z-propagation;
* :mod:`.datasets` -- the labelled data it runs on: generated, fetched (cells3d's nuclei, dsb2018), files;
* :mod:`.real_data` -- the PlantSeg crops, augmented for training;
* :mod:`.recipes` -- the shipped demo model's seeded recipes, one per version;
* :mod:`.demo` -- trains a recipe and scores the result on held-out data;
* :mod:`.scratch_init` -- initialisation of a model trained from scratch.
"""

from .finetune import TrainingConfig, TrainingError, TrainingPair, TrainingResult, train

__all__ = ["TrainingConfig", "TrainingError", "TrainingPair", "TrainingResult", "train"]
