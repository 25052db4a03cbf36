"""tf.data loaders, one module per dataset family, and where their files come from."""
