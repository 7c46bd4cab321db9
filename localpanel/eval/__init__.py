"""The eval stage, above the protocol: question sets run through a panel, scored as a single model, a majority
vote, a probability-weighted vote and a debate, with standard errors (see ``questions``, ``runner``, ``report``)."""
