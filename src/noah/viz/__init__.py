"""What a trained head looks at, and how its training went: ``noah visualize``, ``noah plot``,
``noah report`` (SPEC §9, the paper's Fig. 2 and Fig. 3).

* :mod:`~noah.viz.attention` -- NOAH's per-block attention, value and product maps at image size;
  which classes to show;
* :mod:`~noah.viz.gradcam` -- Grad-CAM++ (from the ``grad-cam`` library) of a GAP-baseline run;
* :mod:`~noah.viz.boxes` -- box annotations of COCO-format data as masks in the model's input frame;
* :mod:`~noah.viz.score` -- how much of a class's map mass falls inside its boxes (1.0 = chance);
* :mod:`~noah.viz.figures` -- the attention grids (matplotlib, Agg canvas, no display);
* :mod:`~noah.viz.curves` -- training curves of one or more runs;
* :mod:`~noah.viz.html` -- self-contained HTML pages (images as data URIs, inline CSS);
* :mod:`~noah.viz.output` -- output files written atomically, never over existing ones silently;
* :mod:`~noah.viz.visualize`, :mod:`~noah.viz.plot`, :mod:`~noah.viz.report` -- the commands.

The package sits above :mod:`noah.engine`, :mod:`noah.models` and :mod:`noah.data` and may import
them; nothing below imports it. It needs the ``viz`` extra (matplotlib, grad-cam).
"""
