"""Warning e-mails become rows of the one outbox loop (common.outbox): a state, a next
attempt, and the sender's claim renamed to the loop's lease (its values kept).

Existing alerts get the state their columns imply: sent (or with no one to tell) is done;
unsent after the last attempt is failed; one a sender holds is processing until its lease
ends; any other unsent one is queued with a lease that has run out, so the next requeue
sweep sends it.
"""

from django.conf import settings
from django.db import migrations, models
from django.utils import timezone


def states_from_columns(apps, schema_editor):
    WhatsAppAlert = apps.get_model("whatsapp", "WhatsAppAlert")
    attempts = getattr(settings, "TASK_RETRY_ATTEMPTS", 8)
    unsent = WhatsAppAlert.objects.filter(notified_at__isnull=True)
    WhatsAppAlert.objects.filter(notified_at__isnull=False).update(state="done", lease_expires_at=None)
    unsent.filter(attempts__gte=attempts).update(state="failed", lease_expires_at=None)
    unsent.filter(attempts__lt=attempts, lease_expires_at__gt=timezone.now()).update(state="processing")
    unsent.filter(attempts__lt=attempts).exclude(state="processing").update(
        state="queued", lease_expires_at=timezone.now()
    )


class Migration(migrations.Migration):
    dependencies = [
        ("clinics", "0007_clinic_free_text_plain"),
        ("whatsapp", "0008_field_labels"),
    ]

    operations = [
        migrations.RenameField(model_name="whatsappalert", old_name="claimed_until", new_name="lease_expires_at"),
        migrations.AlterField(
            model_name="whatsappalert",
            name="lease_expires_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="held by a worker until"),
        ),
        migrations.AddField(
            model_name="whatsappalert",
            name="next_attempt_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="next attempt"),
        ),
        migrations.AddField(
            model_name="whatsappalert",
            name="state",
            field=models.CharField(
                choices=[
                    ("queued", "Queued"),
                    ("processing", "Processing"),
                    ("retrying", "Failed, will retry"),
                    ("done", "Done"),
                    ("failed", "Failed"),
                ],
                default="queued",
                max_length=12,
                verbose_name="processing state",
            ),
        ),
        migrations.RunPython(states_from_columns, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="whatsappalert",
            index=models.Index(fields=["state", "lease_expires_at"], name="wa_alert_state_lease"),
        ),
    ]
