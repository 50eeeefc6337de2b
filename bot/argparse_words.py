"""argparse's own sentences ("usage: ", "options", its parse errors), so that `repbot --help` and a mistyped
command speak the operator's language.

argparse words them with the `gettext`/`ngettext` it imported from the standard library; `speak()` points those
two names at `bot.i18n`'s, so they follow the active language like every other sentence. pybabel reads only our
code, so the message ids are listed here (marked with `N_()`), exactly as Python 3.11's argparse writes them: a
later Python that rewords one says that one in English, never drops it. The sentences only a programmer meets
(conflicting options, a bad `add_argument` call) are left out.
"""

from __future__ import annotations

import argparse

from bot.i18n import N_, _, ngettext

__all__ = ["MESSAGES", "speak"]

MESSAGES = (
    N_("usage: "),
    N_("positional arguments"),
    N_("options"),
    N_("show this help message and exit"),
    N_("argument %(argument_name)s: %(message)s"),
    N_("unrecognized arguments: %s"),
    N_("not allowed with argument %s"),
    N_("ignored explicit argument %r"),
    N_("the following arguments are required: %s"),
    N_("one of the arguments %s is required"),
    N_("expected one argument"),
    N_("expected at most one argument"),
    N_("expected at least one argument"),
    N_("ambiguous option: %(option)s could match %(matches)s"),
    N_("unexpected option string: %s"),
    N_("invalid %(type)s value: %(value)r"),
    N_("invalid choice: %(value)r (choose from %(choices)s)"),
    N_("unknown parser %(parser_name)r (choices: %(choices)s)"),
    N_("can't open '%(filename)s': %(error)s"),
)


def _plurals() -> None:
    """Never called: marks argparse's one plural sentence for `pybabel extract`."""
    ngettext("expected %s argument", "expected %s arguments", 2)


def speak() -> None:
    """From now on argparse says its sentences in the active language (English when none is active)."""
    # argparse looks its `_` and `ngettext` up in its module globals each time it words a sentence.
    setattr(argparse, "_", _)  # noqa: B010  # not in the stubs: a private name of the module
    setattr(argparse, "ngettext", ngettext)  # noqa: B010
