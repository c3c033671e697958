"""`dolbom simulate`: offer strategies compared on a seeded synthetic day (issue 7)."""
