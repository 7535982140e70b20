"""Services: one module per domain; they own transactions and call the repositories."""
