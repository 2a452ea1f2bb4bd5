"""The PDF report of a trained experiment, drawn from what train.py saved (visualizer.py is its command line).

- load: finds the selected categories and reads each one's results (`Category`).
- curves: ROC and PRO curves for drawing, from the metrics package where it has them.
- layout: page geometry, style and the drawing pieces every page uses.
- pages: the contents page and each category's summary page.
- image_pages: the pages of test images (input, ground truth, anomaly map, prediction).
- render: threshold, colour scale and image choice per category, and the PDF itself.
"""
