"""The dashboard's two languages. English is complete; Japanese covers every label a page shows.

The language is the signed-in user's choice if they made one, else the best of `Accept-Language`.
Text from Stripe or the funnel (product names, messages, notes) is shown as it is.
"""

from __future__ import annotations

LANGUAGES = ("en", "ja")

_TEXT: dict[str, tuple[str, str]] = {
    # key: (English, Japanese)
    "app_name": ("Refund & reconciliation", "返金・照合ダッシュボード"),
    "sign_in": ("Sign in", "サインイン"),
    "sign_out": ("Sign out", "サインアウト"),
    "email": ("Email", "メールアドレス"),
    "password": ("Password", "パスワード"),
    "sign_in_wrong": ("Wrong email or password.", "メールアドレスまたはパスワードが違います。"),
    "sign_in_locked": (
        "Too many failed sign-ins. Try again in {minutes} minutes, or ask an admin.",
        "サインインの失敗が多すぎます。{minutes}分後に再度お試しいただくか、管理者にご連絡ください。",
    ),
    "session_expired": (
        "Your session ended. Please sign in again.",
        "セッションが終了しました。再度サインインしてください。",
    ),
    "overview": ("Overview", "概要"),
    "sales": ("Sales", "売上"),
    "customers": ("Customers", "顧客"),
    "customer": ("Customer", "顧客"),
    "plans": ("Plans", "分割・定期"),
    "alerts": ("Alerts", "アラート"),
    "events": ("Events", "イベント"),
    "runs": ("Nightly runs", "夜間照合"),
    "audit": ("Audit log", "操作履歴"),
    "language": ("Language", "言語"),
    "browser_default": ("Browser's", "ブラウザの設定"),
    "save": ("Save", "保存"),
    "search": ("Search", "検索"),
    "filter": ("Filter", "絞り込み"),
    "clear": ("Clear", "クリア"),
    "all": ("All", "すべて"),
    "none": ("None", "なし"),
    "yes": ("Yes", "はい"),
    "no": ("No", "いいえ"),
    "previous": ("Previous", "前へ"),
    "next": ("Next", "次へ"),
    "page_of": ("Page {page} of {pages}", "{pages}ページ中{page}ページ"),
    "rows_found": ("{count} rows", "{count}件"),
    "export_csv": ("Export CSV", "CSVをダウンロード"),
    # overview
    "open_alerts": ("Open alerts", "未対応のアラート"),
    "no_open_alerts": ("No open alerts.", "未対応のアラートはありません。"),
    "period_totals": ("Takings", "売上集計"),
    "today": ("Today", "今日"),
    "this_month": ("This month", "今月"),
    "last_month": ("Last month", "先月"),
    "gross": ("Gross", "売上"),
    "refunded": ("Refunded", "返金"),
    "net": ("Net", "純売上"),
    "count": ("Payments", "件数"),
    "failed_installments": ("Failed installments", "失敗した分割払い"),
    "no_failed_installments": ("No failed installments.", "失敗した分割払いはありません。"),
    "failing_events": ("Failing and dead events", "失敗・停止したイベント"),
    "no_failing_events": ("No failing events.", "失敗しているイベントはありません。"),
    "last_run": ("Last nightly run", "直近の夜間照合"),
    "no_runs": ("The nightly run has not run yet.", "夜間照合はまだ実行されていません。"),
    "run_found": (
        "Found {count} payments whose webhooks never arrived",
        "Webhookが届かなかった支払いを{count}件発見",
    ),
    "webhook_freshness": ("Webhook freshness", "Webhookの受信状況"),
    "newest_event": ("Newest event received {age} ago", "最新のイベントは{age}前に受信"),
    "no_events_yet": ("No webhook has arrived yet.", "Webhookはまだ届いていません。"),
    "webhook_silence": (
        "Nothing has arrived for over {hours} hours: check the endpoint in Stripe's dashboard.",
        "{hours}時間以上何も届いていません。Stripeダッシュボードでエンドポイントを確認してください。",
    ),
    # sales
    "date": ("Date", "日時"),
    "from": ("From", "開始日"),
    "to": ("To", "終了日"),
    "product": ("Product", "商品"),
    "amount": ("Amount", "金額"),
    "kind": ("Kind", "種類"),
    "status": ("Status", "状態"),
    "source": ("Source", "記録元"),
    "found_by": ("Found by", "検出方法"),
    "installment": ("Installment", "分割"),
    "installment_k_of_n": ("installment {k} of {n}", "分割 {k}/{n}回目"),
    "installment_k": ("installment {k}", "分割 {k}回目"),
    "payment_k": ("payment {k}", "{k}回目の支払い"),
    "totals_by_currency": ("Totals by currency", "通貨別合計"),
    "totals_by_product": ("Totals by product", "商品別合計"),
    "currency": ("Currency", "通貨"),
    "kind_one_time": ("one-time", "単発"),
    "kind_installment": ("installment", "分割払い"),
    "kind_subscription": ("subscription", "定期購読"),
    # customers
    "customer_search_help": (
        "Email, name, charge (ch_), payment intent (pi_), Stripe customer (cus_) or funnel purchase id",
        "メール、名前、支払いID(ch_)、PaymentIntent(pi_)、Stripe顧客ID(cus_)、ファネル購入ID",
    ),
    "no_customers": ("No customer matches.", "該当する顧客はいません。"),
    "timeline": ("Timeline", "履歴"),
    "stripe_ids": ("Stripe customers", "Stripe顧客ID"),
    "open_in_stripe": ("Stripe", "Stripe"),
    "before_refund": ("Before you refund", "返金する前に"),
    "check_duplicate": ("Duplicate purchase", "重複購入"),
    "check_access": ("Access at risk", "アクセスへの影響"),
    "check_installment": ("Installment", "分割払い"),
    "check_dispute": ("Dispute", "チャージバック"),
    "dup_yes": (
        "Yes: the customer also paid {other} for the same product on {day}.",
        "はい：同じ商品を{day}にも購入しています（{other}）。",
    ),
    "dup_no": ("No other purchase of this product.", "同じ商品の他の購入はありません。"),
    "dup_others_refunded": (
        "The other purchase of this product ({others}) was refunded already: this is the one the customer"
        " still holds.",
        "同じ商品の他の購入（{others}）は返金済みです。顧客が保持しているのはこの購入です。",
    ),
    "access_last_copy": (
        "Refunding it ends the customer's access to this product: they hold no other paid copy.",
        "返金すると、この商品へのアクセスはなくなります（他に支払い済みの購入はありません）。",
    ),
    "check_refund": ("Refund", "返金"),
    "access_risk": (
        "Refunding may make the membership site revoke access the customer still paid for ({other}):"
        " re-grant it after refunding.",
        "返金すると、会員サイトが支払い済みのアクセス（{other}）まで停止する場合があります。返金後にアクセスを再付与してください。",
    ),
    "access_ok": (
        "No paid access depends on another purchase of it.",
        "他の購入に依存するアクセスはありません。",
    ),
    "installment_note": (
        "This is {label}. Refunding it does not cancel the plan: later installments are still charged.",
        "これは{label}です。返金しても分割払いは停止されず、以降の支払いは続きます。",
    ),
    "not_installment": ("Not part of a plan.", "分割・定期ではありません。"),
    "dispute_open": (
        "A dispute is open ({status}): respond to it in Stripe rather than refunding.",
        "チャージバックが進行中です（{status}）。返金ではなくStripeで対応してください。",
    ),
    "dispute_open_refundable": (
        "An inquiry is open ({status}): a refund now closes it.",
        "問い合わせが進行中です（{status}）。今返金すると問い合わせは終了します。",
    ),
    "dispute_closed": ("A dispute was {status}.", "チャージバックは{status}で終了しました。"),
    "no_dispute": ("No dispute.", "チャージバックはありません。"),
    "already_refunded": ("Already refunded in full.", "全額返金済みです。"),
    "add_note": ("Add a note", "メモを追加"),
    "note": ("Note", "メモ"),
    "note_added": ("Note added.", "メモを追加しました。"),
    "plan_status": ("Plan", "プラン"),
    # kinds on the timeline
    "tl_purchase": ("Funnel purchase", "ファネル購入"),
    "tl_payment": ("Payment", "支払い"),
    "tl_failed_payment": ("Failed payment", "支払い失敗"),
    "tl_refund": ("Refund", "返金"),
    "tl_dispute": ("Dispute", "チャージバック"),
    "tl_alert": ("Alert", "アラート"),
    "tl_plan": ("Plan", "プラン"),
    "tl_note": ("Note", "メモ"),
    # plans
    "installments_paid": ("Paid", "支払い済み"),
    "failed_payments": ("Failed", "失敗"),
    "next_attempt": ("Next attempt", "次回請求"),
    "access_ends": ("Access ends", "アクセス終了"),
    "no_plans": ("No plans.", "プランはありません。"),
    # alerts
    "acknowledge": ("Acknowledge", "対応中にする"),
    "resolve": ("Resolve", "解決済みにする"),
    "message": ("Message", "内容"),
    "delivery": ("Delivery", "通知"),
    "created": ("Created", "作成日時"),
    "handled_by": ("Handled by", "担当"),
    "no_alerts": ("No alerts here.", "該当するアラートはありません。"),
    "alert_acknowledged": ("Alert {id} acknowledged.", "アラート{id}を対応中にしました。"),
    "alert_resolved": ("Alert {id} resolved.", "アラート{id}を解決済みにしました。"),
    "status_open": ("open", "未対応"),
    "status_acknowledged": ("acknowledged", "対応中"),
    "status_resolved": ("resolved", "解決済み"),
    # events
    "type": ("Type", "種類"),
    "attempts": ("Attempts", "試行回数"),
    "received": ("Received", "受信日時"),
    "error": ("Error", "エラー"),
    "payload": ("Payload (secrets redacted)", "内容（秘密情報は伏せ字）"),
    "traceback": ("Traceback", "トレースバック"),
    "replay": ("Replay", "再処理"),
    "replay_confirm": (
        "Run this event's handler again now? Handlers never double what they wrote.",
        "このイベントを今すぐ再処理しますか？ 再処理で記録が重複することはありません。",
    ),
    "confirm": ("Confirm", "実行する"),
    "cancel": ("Cancel", "キャンセル"),
    "status_before": ("Status before", "再処理前の状態"),
    "status_after": ("Status after", "再処理後の状態"),
    "no_events": ("No events here.", "該当するイベントはありません。"),
    "since": ("Since", "以降"),
    "report": ("Report", "結果"),
    "window": ("Window", "対象期間"),
    "started": ("Started", "開始"),
    "finished": ("Finished", "終了"),
    # audit
    "when": ("When", "日時"),
    "who": ("Who", "操作者"),
    "action": ("Action", "操作"),
    "target": ("Target", "対象"),
    "detail": ("Detail", "詳細"),
    "address": ("Address", "接続元"),
    # users
    "users": ("Users", "ユーザー"),
    "role": ("Role", "権限"),
    "last_sign_in": ("Last sign-in", "最終サインイン"),
    "disabled": ("disabled", "無効"),
    "locked_until": ("locked until", "ロック中："),
    "active_account": ("active", "有効"),
    "enable": ("Enable", "有効にする"),
    "disable": ("Disable", "無効にする"),
    "new_password": ("New password (12+ characters)", "新しいパスワード（12文字以上）"),
    "set_password": ("Set password", "パスワードを設定"),
    "add_user": ("Add a user", "ユーザーを追加"),
    # errors
    "forbidden": ("Your role does not allow this.", "この操作を行う権限がありません。"),
    "not_found": ("Not found.", "見つかりません。"),
    "csrf_failed": (
        "The form expired. Go back, reload and try again.",
        "フォームの有効期限が切れました。再読み込みしてやり直してください。",
    ),
}


# Status values as staff read them; the raw value stays in the page's data attributes and CSV.
_STATUS: dict[str, tuple[str, str]] = {
    "paid": ("paid", "支払い済み"),
    "refunded": ("refunded", "返金済み"),
    "partially_refunded": ("partially refunded", "一部返金"),
    "failed": ("failed", "失敗"),
    "disputed": ("disputed", "チャージバック中"),
    "dispute_lost": ("dispute lost", "チャージバック敗訴"),
    "open": ("open", "未対応"),
    "acknowledged": ("acknowledged", "対応中"),
    "resolved": ("resolved", "解決済み"),
    "active": ("active", "継続中"),
    "past_due": ("past due", "支払い遅延"),
    "unpaid": ("unpaid", "未払い"),
    "completed": ("completed", "完了"),
    "cancelled": ("cancelled", "解約"),
    "done": ("done", "完了"),
    "dead": ("dead", "停止"),
    "received": ("received", "受信済み"),
    "processing": ("processing", "処理中"),
    "ignored": ("ignored", "対象外"),
    "pending": ("pending", "保留中"),
    "succeeded": ("succeeded", "成功"),
    "sent": ("sent", "送信済み"),
    "sending": ("sending", "送信中"),
    "not_configured": ("not configured", "通知先未設定"),
    "needs_response": ("needs response", "要対応"),
    "under_review": ("under review", "審査中"),
    "warning_needs_response": ("inquiry: needs response", "問い合わせ：要対応"),
    "warning_under_review": ("inquiry: under review", "問い合わせ：審査中"),
    "warning_closed": ("inquiry closed", "問い合わせ終了"),
    "won": ("won", "勝訴"),
    "lost": ("lost", "敗訴"),
    "running": ("running", "実行中"),
    "withdrawn": ("withdrawn", "取り下げ"),
}


def choose_language(preference: str | None, accept_language: str | None) -> str:
    """The user's own setting, else the highest-weighted of `Accept-Language` we have, else English."""
    if preference in LANGUAGES:
        return preference
    best, best_q = "en", -1.0
    for position, part in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        language = tag.strip().lower().split("-")[0]
        # Earlier tags win ties, as browsers list them in the user's order.
        if language in LANGUAGES and q > best_q and q > 0:
            best, best_q = language, q - position * 1e-6
    return best


def translator(language: str):
    index = 1 if language == "ja" else 0

    def t(key: str, **values) -> str:
        pair = _TEXT.get(key)
        text = pair[index] if pair else key
        return text.format(**values) if values else text

    def status(value: str | None) -> str:
        pair = _STATUS.get(value or "")
        return pair[index] if pair else (value or "")

    t.status = status  # type: ignore[attr-defined]
    return t
