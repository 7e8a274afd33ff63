"""Evaluation protocols over any embedder: feature extraction with a cache
(:mod:`.features`), University-1652 / University-WX (:mod:`.university`), the
weather-invariance probes (:mod:`.invariance` for the maths on arrays, :mod:`.probes`
for the ``invariance`` section of an evaluation), the University-160k challenge answer
files and scoring (:mod:`.challenge`) and reports (:mod:`.report`)."""
