"""What serves the repository's experiments, not the library: data sets and training machinery.

The library is `phased_lstm` (cells, time gate, fast and event-driven paths, Keras layers);
importing it loads nothing from here. The scripts at the top of the repository
(`mnist_phased_lstm.py`, `freq_phased_lstm.py`, ...) use both.
"""
