"""`!canary [name]` and `!canary history [name]`; the canary job is `bot.monitor.canary`."""

from __future__ import annotations

from bot.commands.registry import Argument, Call, command
from bot.i18n import N_, _
from bot.monitor.canary import HISTORY
from bot.render import Rendered, canary_history_text, canary_launch_line, plain_and_html, pre

__all__ = ["canary_command"]


@command(
    "canary",
    help=N_("send a canary to a seed mailbox now (or `history [name]`): where did it land?"),
    args=[Argument("name", required=False), Argument("seed", required=False)],
    costly=True,
)
async def canary_command(call: Call) -> Rendered:
    runner = call.services.canaries
    if runner is None:
        return plain_and_html(_("no canaries are configured: add a [canary] section (see docs/canaries.md)"))
    name, seed = call.args.get("name"), call.args.get("seed")
    if name == "history":
        return pre(canary_history_text(runner.store.get_meta(HISTORY, {}), seed))
    names = [name] if name else sorted(runner.settings)
    unknown = [n for n in names if n not in runner.settings]
    if unknown:
        return plain_and_html(
            _("no seed named {name!r}; seeds: {seeds}").format(
                name=unknown[0][:40], seeds=", ".join(sorted(runner.settings))
            )
        )
    replies = [canary_launch_line(each, await runner.launch(each, call.incoming)) for each in names]
    return plain_and_html("\n".join(replies))
