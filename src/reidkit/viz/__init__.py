"""Pictures of a run: ranked lists (``reidkit.viz.ranked``), CMC and training curves
(``reidkit.viz.curves``). Import the submodules; matplotlib is only loaded when a curve is drawn."""
