"""Estimate, store and verify the IR-to-visible registration that the pipeline reads."""

from calibration.fileformat import CalibrationError, Registration, identity_registration, load_registration, save_registration

__all__ = ["CalibrationError", "Registration", "identity_registration", "load_registration", "save_registration"]
