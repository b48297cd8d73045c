"""Looking into a model (needs detectron2): parameter and FLOP counts (:mod:`.flops`,
:mod:`.model_report`, behind ``tools/analyze_model.py``) and its attentions on an image
(:mod:`.attention`, :mod:`.attention_plots`, behind ``tools/visualize_attention.py``)."""
