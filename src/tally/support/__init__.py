"""Small pieces every area uses: object ids, the wall clock and time text, page
cursors, and the loop that runs background work."""
