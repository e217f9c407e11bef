"""tf.data input pipelines: crop pairs (`pairs`) and auto-crop targets (`autocrop`)."""
