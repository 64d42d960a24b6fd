"""Static HTML reviews (``desra-fast report``): of a run (:func:`build_run_report`: ranked gallery,
region zooms, GAN/MSE sliders, curation into train/val lists) and of a fine-tune evaluation
(:func:`build_eval_report`). See docs/report.md."""
from .eval_report import EvalReportResult, build_eval_report
from .run_report import ReportResult, build_run_report
from .site import ReportError

__all__ = ["build_run_report", "build_eval_report", "ReportResult", "EvalReportResult", "ReportError"]
