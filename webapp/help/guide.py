"""The words of the help guide, one entry per status.

`{support}` is replaced by the support address when the guide is shown.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GuideEntry:
    summary: str
    meaning: tuple[str, ...]
    next_steps: tuple[str, ...]
    caveats: tuple[str, ...] = ()


GUIDE: dict[str, GuideEntry] = {
    "sending": GuideEntry(
        summary="We are handing the email to our email provider.",
        meaning=(
            "The email has been created and is on its way to the email provider that delivers our mail.",
            "This normally takes a few seconds; after a few minutes at most the email should move on to "
            "Processed.",
        ),
        next_steps=(
            "Nothing yet: the log updates by itself.",
            "If an email stays in Sending for longer than 10 minutes, contact support at {support}. "
            "The log marks such an email as stuck and support is alerted automatically.",
        ),
    ),
    "processed": GuideEntry(
        summary="Our email provider has accepted the email and is preparing to deliver it.",
        meaning=(
            "The email provider has the email and is preparing it for delivery to the client's email "
            "provider (for example Gmail or Outlook).",
            "After a few minutes the email should be sent, and the status moves on.",
        ),
        next_steps=(
            "Nothing yet: the log updates by itself.",
            "If an email stays in Processed for longer than 10 minutes, contact support at {support}. "
            "The log marks such an email as stuck and support is alerted automatically.",
        ),
    ),
    "deferred": GuideEntry(
        summary="The client's email provider asked us to try again later.",
        meaning=(
            "The receiving email provider has temporarily refused the email. It has not been rejected "
            "for good: this often happens when the receiving server is busy or is checking new senders.",
            "We try to deliver it again automatically, for up to 72 hours. The timeline shows each attempt "
            "and the receiving server's answer.",
        ),
        next_steps=(
            "Check back later: the status changes by itself once the email is delivered or given up on.",
            "If the email is urgent, reach the client another way (for example by phone) in the meantime.",
        ),
    ),
    "delivered": GuideEntry(
        summary="The client's email provider reported that it received the email.",
        meaning=(
            "The receiving email provider confirmed that it accepted the email.",
            "Delivered is not proof that the email reached the inbox: some providers report delivery and "
            "then file the email in a junk or spam folder, or report inaccurately.",
        ),
        next_steps=(
            "If the client says they did not get it, ask them to check their junk, spam, promotions and "
            "other folders, and to search for the subject.",
            "If it is not in any folder, ask the client to contact their email provider: the provider "
            "confirmed delivery, so only the provider can say where the email went.",
        ),
        caveats=(
            "An Open or Clicked status later on is a very good sign that the email arrived.",
            "A bounce can still arrive after delivery; the log then shows Failed and says when.",
        ),
    ),
    "open": GuideEntry(
        summary="The email has been opened.",
        meaning=(
            "The email was opened, which is a very good sign that it was delivered and seen by the client.",
        ),
        next_steps=("Nothing to do: the email arrived.",),
        caveats=(
            "Opens are skewed by privacy and firewall settings: some email apps (such as Apple Mail with "
            "Mail Privacy Protection) open every email automatically, and some never report opens at all.",
            "When the provider says an open was made by a machine, the timeline labels it “machine open”: "
            "it shows the email arrived, not that the client read it.",
        ),
    ),
    "clicked": GuideEntry(
        summary="A link or button in the email has been clicked.",
        meaning=(
            "Someone clicked a link or button in the email, which is a very good sign that it was delivered "
            "and seen by the client. The timeline shows which link.",
        ),
        next_steps=("Nothing to do: the email arrived.",),
        caveats=(
            "Clicks are skewed by privacy and firewall settings: security software at some workplaces "
            "follows every link in incoming mail to check it.",
            "A click within seconds of delivery, or many links clicked at once, is labelled “likely "
            "automated” in the timeline.",
        ),
    ),
    "failed": GuideEntry(
        summary="The client's email provider cannot or will not deliver the email.",
        meaning=(
            "The receiving email provider refused the email, or we stopped trying after repeated deferrals. "
            "The timeline shows the reason.",
            "Failed emails are most often caused by an outdated or mistyped address.",
            "They can also be caused by an earlier spam report: once a client reports one of our emails "
            "as spam, no more emails can reach that address until the client asks to be removed from the "
            "spam list.",
        ),
        next_steps=(
            "Check with the client that the address in their file is current and spelled correctly.",
            "Ask whether they reported an earlier email as spam.",
            "Once the address is corrected, use “Resend” on the failed email.",
        ),
        caveats=(
            "If a spam report was made by mistake, only the client can lift it: see “Removing a client from "
            "the spam list” below.",
        ),
    ),
    "spam-report": GuideEntry(
        summary="The client marked the email as spam.",
        meaning=(
            "The client used their email app's “Report spam” or “Junk” button on this email.",
            "From then on, no more emails can reach this address: sending to it is refused, to protect "
            "the client's choice and the clinic's ability to reach everyone else.",
        ),
        next_steps=(
            "If the report was made by mistake, the client can ask to be removed from the spam list.",
            "To do that, they email {support} from the address in their client file.",
        ),
        caveats=(
            "For compliance, the request must come directly from the client: clinic staff cannot make it "
            "for them.",
        ),
    ),
}

REMOVAL_FLOW = (
    "The client emails {support} from the address in their client file, asking to be removed from the "
    "spam list.",
    "Support checks that the email really came from that address (the sending server must prove it) and "
    "that it matches the client file, then lifts the block.",
    "Emails can then be sent to the client again. Resend anything important.",
)

REMOVAL_WHY = (
    "A spam report is the client's own decision about their inbox. Anti-spam rules and our email "
    "provider's terms require that only the person who made it can take it back, so nobody at the clinic "
    "or at support can lift it on the client's behalf, and a confirmation email cannot help either: the "
    "address is blocked, so it would never arrive."
)
