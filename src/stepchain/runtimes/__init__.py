"""Where workers run: the Lambda handlers (``aws/``), the embedded runtime (``local``) and ``serve``,
the one call every transport makes."""
