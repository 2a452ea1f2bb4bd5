"""The PDF report of a trained experiment, drawn from what train.py saved (visualizer.py is its command line).

- load: finds the selected categories and reads each one's results (`Category`).
- curves: ROC and PRO curves for drawing, from the metrics package where it has them.
- layout: page geometry, style and the drawing pieces every page uses.
- pages: the contents page and each category's summary page.
- image_pages: the pages of test images (input, ground truth, anomaly map, prediction).
- regions: where the zoomed crops of a large test image go (its defect regions and false alarms).
- zoom_pages: the pages of those crops at native resolution, after each image page.
- render: threshold, colour scale, image choice and crops per category, the page plan, and the PDF itself.
"""
