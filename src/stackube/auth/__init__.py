"""stackube-auth: Keystone tokens authenticate kubectl users (TokenReview webhook),
and `stackube login` gets them for kubectl (exec credential plugin)."""
