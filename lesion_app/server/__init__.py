"""The HTTP server's concerns: datastores, request checks, upload limit, auth, retraining schedule, patches."""
