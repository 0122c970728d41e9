"""The pipeline's stages: the `Stage` record (base.py) and the train stage.

Each stage is declared once, as STAGE in the module named after it:
train (stages/train.py), distill (lmcjax/distill/stage.py), imp (lmcjax/imp.py),
analysis (lmcjax/analysis/), report (lmcjax/report.py); lmcjax/pipeline.py
lists them.
"""
