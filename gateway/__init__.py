"""The HTTP gateway: job submission, state and cancellation, and resumable event streams."""
