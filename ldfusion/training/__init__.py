"""The trainer: ``ldfusion train``. The library never imports this package."""
