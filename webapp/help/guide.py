"""The words of the help guide, one entry per status.

`{support}` is replaced by the support address when the guide is shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from webapp.services.next_steps import CONTACT_SUPPORT_AFTER_WORDS, STUCK_AFTER_WORDS


@dataclass(frozen=True)
class GuideEntry:
    """The help for one status: what it means, what to do next, and what to keep in mind."""

    summary: str
    meaning: tuple[str, ...]
    next_steps: tuple[str, ...]
    caveats: tuple[str, ...] = ()
    # Whether the spam-list removal steps belong with this status wherever it is explained.
    removal: bool = False


# When a clinician should still get in touch about a stuck email (the log's notice says the same).
STILL_STUCK = (
    "Contact support at {support}, quoting the reference, only if the email is still stuck "
    f"{CONTACT_SUPPORT_AFTER_WORDS} after it was sent, or if several emails are stuck at once."
)

# The client's mail server took the email, then filed it as spam (Postmark's SpamNotification): the
# status stays, and the log row, the help panel and the guide say what to do in the same words.
FILED_AS_SPAM = (
    "The client's mail server filed this email as spam: ask {client} to look in their spam folder and "
    "mark it as not spam. A resend would most likely be filed as spam too."
)
FILED_AS_SPAM_CAVEAT = (
    "If the client's mail server says it filed the email as spam, the status stays as it is (the email "
    "did arrive) and the log says so: ask the client to look in their spam folder and mark it as not "
    "spam. A resend would most likely be filed as spam too."
)

GUIDE: dict[str, GuideEntry] = {
    "sending": GuideEntry(
        summary="The email is on its way to our email provider.",
        meaning=(
            "The email has been created and is being handed to the email provider that delivers our mail.",
            "This normally takes a few seconds. After a few minutes at most, the email should move on to "
            "Processed.",
            "If the provider's answer is lost on the way (a network or provider fault), the log says we "
            "are checking whether the provider received it. We ask the provider's records before "
            "sending it again, so the client does not get the same email twice.",
            "An email is handed to the provider at most twice. If the provider's records show neither "
            "handover, the log says the provider accepted it but has not reported on it: it is not sent "
            "again, and support is alerted automatically.",
        ),
        next_steps=(
            "Nothing yet: the log updates by itself.",
            f"If an email stays in Sending for longer than {STUCK_AFTER_WORDS}, the log marks it as stuck "
            "and support is alerted automatically, with the email's reference (such as E-123, shown on the "
            "row): you do not need to contact support.",
            STILL_STUCK,
            "If the email is urgent, reach the client another way (for example by phone) meanwhile.",
        ),
    ),
    "processed": GuideEntry(
        summary="Our email provider has the email and is preparing it for delivery.",
        meaning=(
            "Next, our email provider sends it on to the client's email provider (for example Gmail or "
            "Outlook).",
            "After a few minutes at most the email should be sent, and the status moves on.",
        ),
        next_steps=(
            "Nothing yet: the log updates by itself.",
            f"If an email stays in Processed for longer than {STUCK_AFTER_WORDS}, the log marks it as stuck "
            "and support is alerted automatically, with the email's reference (such as E-123, shown on the "
            "row): you do not need to contact support.",
            STILL_STUCK,
            "If the email is urgent, reach the client another way (for example by phone) meanwhile.",
        ),
    ),
    "deferred": GuideEntry(
        summary="The client's email provider asked us to try again later.",
        meaning=(
            "The client's email provider has temporarily refused the email, so it cannot be delivered "
            "right now. It has not been rejected for good: this can happen when the receiving server is "
            "busy, or is being careful with a sender it does not know well.",
            "Our email provider tries to deliver it again automatically, for up to 72 hours. The timeline "
            "shows each attempt and the receiving server's answer.",
        ),
        next_steps=(
            "Nothing yet: check back later. The status changes by itself once the email is delivered, or "
            "to Failed if the receiving provider still refuses it after 72 hours.",
            "If the email is urgent, reach the client another way (for example by phone) in the meantime.",
        ),
    ),
    "delivered": GuideEntry(
        summary="The client's email provider reported that it received the email.",
        meaning=(
            "Delivered does not guarantee that the email reached the client's inbox: some email providers "
            "report delivery and then file the email in a junk or spam folder, and some report inaccurately.",
        ),
        next_steps=(
            "If the client says they did not get it, ask them to check their junk, spam, promotions and "
            "other folders, and to search their mailbox for the subject.",
            "If it is not in any folder, ask the client to contact their email provider: the provider "
            "confirmed delivery, so only the provider can tell them where the email went.",
            "If it is urgent, check the address with the client and resend it: open the email's row in "
            "the log and use “Check junk folders, then resend…”.",
        ),
        caveats=(
            "If the status later moves on to Open or Clicked, that is a very good sign that the email "
            "arrived.",
            "Delivered without Open does not mean unread: some clients never report an open (their email "
            "app does not load images, or privacy protection such as Apple Mail Privacy Protection hides "
            "it), so many emails that were read stay Delivered.",
            "A bounce can still arrive after delivery; the log then shows Failed and says when.",
            FILED_AS_SPAM_CAVEAT,
        ),
    ),
    "open": GuideEntry(
        summary="The email has been opened.",
        meaning=("This is generally a very good sign that the email was delivered and seen by the client.",),
        next_steps=("Nothing to do: the email arrived.",),
        caveats=(
            "Open rates are skewed by privacy and firewall settings: some email apps (such as Apple Mail "
            "with Mail Privacy Protection) open every email automatically, and others never report an open, "
            "so an email can be read without ever showing Open.",
            "An open can only be tracked for an email with an HTML part (a tiny image in it reports the "
            "open when the email app loads it): a text-only email never shows Open, however often it is "
            "read. “View the email as sent” on its row says whether it had one.",
            "When our email provider says an open was made by a machine, the timeline labels it “machine "
            "open”: it shows the email arrived, not that the client read it.",
            FILED_AS_SPAM_CAVEAT,
        ),
    ),
    "clicked": GuideEntry(
        summary="A link or button in the email has been clicked.",
        meaning=(
            "This is generally a very good sign that the email was delivered and seen by the client. The "
            "timeline shows which link was clicked.",
        ),
        next_steps=("Nothing to do: the email arrived.",),
        caveats=(
            "Click rates are skewed by privacy and firewall settings: security software at some workplaces "
            "follows every link in incoming mail to check it, which looks like a click.",
            "A click within seconds of delivery, or many links clicked at once, is labelled “likely "
            "automated” in the timeline.",
            FILED_AS_SPAM_CAVEAT,
        ),
    ),
    "failed": GuideEntry(
        summary="The client's email provider cannot or will not deliver the email.",
        meaning=(
            "The client's email provider refused the email, or stopped accepting it for 72 hours after "
            "repeated deferrals. The log shows the reason in plain words, and the timeline shows the "
            "receiving server's own answer.",
            "Failed emails are most often caused by an outdated address or a typo in the address.",
            "When the client's mailbox is full, the log says so: the address is right, and the email can "
            "go through once the client makes room.",
            "They can also be caused by an earlier spam report: once a client reports one of our emails "
            "as spam, no more emails can reach that address until the client asks to be removed from the "
            "spam list.",
        ),
        next_steps=(
            "If the log says the client's mailbox is full: try again later, or call the client and ask them "
            "to make room. The address is right, so there is nothing to correct.",
            "Otherwise, check with the client that the address in their file is current and spelled "
            "correctly, and correct it if needed.",
            "Ask whether they reported an earlier email as spam: if so, see “Removing a client from the "
            "spam list”.",
            "Then use “Resend…” on the failed email: you can check and change the address before it goes.",
        ),
        caveats=(
            "If a spam report was made by mistake, the client can ask to be removed from the spam list, "
            "and only the client can do it: for compliance, the request must come directly from them.",
        ),
        removal=True,
    ),
    "spam-report": GuideEntry(
        summary="The client marked the email as spam.",
        meaning=(
            "The client used their email app's “Report spam” or “Junk” button on this email (sometimes "
            "by mistake).",
            "From then on, no more emails can reach this address: the client file shows a warning and "
            "sending to it is refused, because the client has said they do not want these emails.",
        ),
        next_steps=(
            "If the report was made by mistake, the client can ask to be removed from the spam list.",
            "To do that, they email {support} from the address in their client file. The client file has "
            "ready-to-copy instructions you can send them by another route (for example by text message).",
        ),
        caveats=(
            "For compliance, the request must come directly from the client: clinic staff cannot make it "
            "for them.",
        ),
        removal=True,
    ),
}

REMOVAL_FLOW = (
    "The client emails {support} from the address in their client file, asking to be removed from the "
    "spam list.",
    "Support checks that the email really came from that address (the sending server must prove it) and "
    "that it matches the client file, then lifts the block.",
    "The warning disappears from the client file and emails can be sent again. Resend anything "
    "important from the log.",
)

REMOVAL_WHY = (
    "For compliance, the removal request must come directly from the client. A spam report is the "
    "client's own decision about their inbox, so only the client can take it back: nobody at the clinic, "
    "and nobody at support, can lift it on their behalf. We cannot send the client a confirmation email "
    "either, because the address is blocked and it would never arrive; that is why the client writes to us."
)


def stuck_email_steps(reference: str, support_now: bool) -> tuple[str, ...]:
    """What to do about one stuck email, as its help panel says it (its log row and its Needs
    attention item say the same); `{support}` is replaced as in the guide."""
    if support_now:
        return (
            f"This email is still stuck more than {CONTACT_SUPPORT_AFTER_WORDS} after it was sent: "
            f"contact support now, quoting {reference}, at {{support}}.",
            "If the email is urgent, reach the client another way (for example by phone).",
        )
    return (
        f"This email has been stuck for more than {STUCK_AFTER_WORDS}, longer than sending normally "
        f"takes. Support was alerted automatically under reference {reference}: you do not need to "
        "contact them yet.",
        f"Contact support at {{support}}, quoting {reference}, only if it is still stuck "
        f"{CONTACT_SUPPORT_AFTER_WORDS} after it was sent.",
        "If the email is urgent, reach the client another way (for example by phone) meanwhile.",
    )
