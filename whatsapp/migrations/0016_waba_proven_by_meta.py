"""The WABA Meta showed each number to be in (`proven_business_account_id`): events that name only a
WABA reach the accounts whose proven WABA it is.

An existing account is marked proven only where our own records already hold Meta's word for its
ids as they are now: its last health check found the phone number id in the WABA's numbers, and the
account was not saved after that check read it (a later save may have changed either id). Every
other account starts unproven, typed ids being no proof, until its next health check (queued daily
for every connected number) or code request.
"""

from django.db import migrations, models

HOLDING_STATUSES = ("active", "verifying", "failed")


def mark_proven_by_the_last_health_check(apps, schema_editor):
    account_model = apps.get_model("whatsapp", "WhatsAppAccount")
    health_model = apps.get_model("whatsapp", "WhatsAppHealth")
    accounts = (
        account_model.objects.filter(status__in=HOLDING_STATUSES)
        .exclude(phone_number_id="")
        .exclude(business_account_id="")
    )
    rows = list(accounts.values_list("pk", "phone_number_id", "business_account_id", "updated_at"))
    for account_id, phone_number_id, waba_id, updated_at in rows:
        health = (
            health_model.objects.filter(
                pk=account_id, checked_phone_number_id=phone_number_id, checked_at__gte=updated_at
            )
            .values_list("checks", flat=True)
            .first()
        )
        found = any(
            isinstance(check, dict) and check.get("key") == "number_in_waba" and check.get("ok") is True
            for check in health or []
        )
        if found:
            account_model.objects.filter(pk=account_id).update(proven_business_account_id=waba_id)


class Migration(migrations.Migration):
    dependencies = [
        ("whatsapp", "0015_health_checked_number_and_on_demand_gate"),
    ]

    operations = [
        migrations.AddField(
            model_name="whatsappaccount",
            name="proven_business_account_id",
            field=models.CharField(
                blank=True,
                db_index=True,
                max_length=64,
                verbose_name="WhatsApp Business Account id confirmed by Meta",
            ),
        ),
        migrations.RunPython(mark_proven_by_the_last_health_check, migrations.RunPython.noop),
    ]
