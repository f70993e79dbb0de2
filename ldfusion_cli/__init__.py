"""The command-line shell: ``ldfusion COMMAND ...``, the top layer.

Imports point one way: ``ldfusion`` (library) <- ``calibration`` <- ``pipeline`` <- this
package. Only this package may import from all of them; the layers below never import it.
"""
