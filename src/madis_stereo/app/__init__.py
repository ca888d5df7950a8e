"""The application: the ``madis-stereo`` command line and what only it needs (demo, output files, pair
discovery, image sheets, tables, checkpoint info). It imports the library; the library never imports it."""
