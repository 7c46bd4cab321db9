"""Stage 6 (after ``localpanel.api``), show: a transcript as a card in text, Markdown, HTML or JSON, and the
charts (votes over the rounds, who moved whom, the probabilities' paths) the cards and the live page draw.
"""
