"""Deliveries stored before background processing were applied inline: mark those done.

Any left unprocessed (a worker died inline) stay `queued`, so the requeue sweep
(`manage.py whatsapp_requeue_deliveries`) finally applies them.
"""

from django.db import migrations


def mark_done(apps, schema_editor):
    WebhookDelivery = apps.get_model("whatsapp", "WebhookDelivery")
    WebhookDelivery.objects.filter(processed_at__isnull=False).update(state="done")


class Migration(migrations.Migration):
    dependencies = [("whatsapp", "0006_process_deliveries_in_background_and_watch_health")]

    operations = [migrations.RunPython(mark_done, migrations.RunPython.noop)]
