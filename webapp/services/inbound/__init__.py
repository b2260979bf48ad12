"""Spam-list removal requests that arrive by email, in three parts: `filing` stores each mail at
once as a case and checks it in a job; `proof` decides what a mail proves about its sender (the
security argument is there); `reading` reads a hostile mail within bounds (`addresses` its From
and recipients)."""
