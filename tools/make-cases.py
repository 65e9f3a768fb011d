#!/usr/bin/env python3
"""Writes the rule test cases in tests/cases/: realistic partner mail (.eml) and the
decision a specialist expects (.expect.yaml). Re-run after changing a case here:
    python3 tools/make-cases.py
Standard library only. Dates and Message-IDs are fixed so the files are stable."""
import os, sys
from email.message import EmailMessage
from email.header import Header
from email import policy

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "cases")
ROLE = {"rep": "rep.one@example.com"}
OPS = "partnerorderops@example.com"
DESK = "partnersupport@example.com"
N = [0]

# Documents are written by the libraries partners' tools use (reportlab for PDF,
# python-docx, odfpy, openpyxl), in invariant mode or with fixed timestamps so that a
# re-run writes the same bytes. pip install reportlab python-docx odfpy openpyxl
import io, struct, zipfile, datetime, random

FIXED = (2026, 11, 16, 9, 0, 0)

def pdf(title, lines=(), encrypt=None, scan=False):
    from reportlab.pdfgen import canvas
    buf = io.BytesIO()
    c = canvas.Canvas(buf, invariant=1, encrypt=encrypt)
    if scan:
        # What a scanner produces: marks on the page, no text layer.
        for k in range(12):
            c.rect(72, 760 - 30 * k, 300 + 10 * (k % 4), 12, fill=1)
    else:
        c.setFont("Helvetica", 12)
        y = 780
        for line in (title, *lines):
            c.drawString(72, y, line)
            y -= 18
    c.showPage()
    c.save()
    return buf.getvalue()

def fixzip(data):
    """Rewrites a ZIP container with fixed timestamps (python-docx, odfpy, openpyxl
    stamp the time of writing)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, FIXED)
            fixed.compress_type = zipfile.ZIP_STORED if info.filename == "mimetype" else zipfile.ZIP_DEFLATED
            dst.writestr(fixed, src.read(info.filename))
    return out.getvalue()

def docx(lines):
    import docx as pydocx
    d = pydocx.Document()
    d.core_properties.created = datetime.datetime(*FIXED)
    d.core_properties.modified = datetime.datetime(*FIXED)
    for line in lines:
        d.add_paragraph(line)
    buf = io.BytesIO()
    d.save(buf)
    return fixzip(buf.getvalue())

def odt(lines):
    from odf.opendocument import OpenDocumentText
    from odf.text import P
    doc = OpenDocumentText()
    for line in lines:
        doc.text.addElement(P(text=line))
    buf = io.BytesIO()
    doc.write(buf)
    return fixzip(buf.getvalue())

def xlsx(rows):
    import openpyxl
    wb = openpyxl.Workbook()
    wb.properties.created = datetime.datetime(*FIXED)
    wb.properties.modified = datetime.datetime(*FIXED)
    ws = wb.active
    for r in rows:
        ws.append(list(r))
    buf = io.BytesIO()
    wb.save(buf)
    return fixzip(buf.getvalue())

def tnef(files):
    """winmail.dat as Outlook writes it (MS-OXTNEF): no TNEF writer exists off Windows, so
    this follows the specification: header, version, OEM code page, message class, then
    per file its rendering data, title, dates, data and attachment properties."""
    def attr(level, ident, data):
        return struct.pack("<BII", level, ident, len(data)) + data + struct.pack("<H", sum(data) & 0xFFFF)
    out = struct.pack("<IH", 0x223E9F78, 0x0001)
    out += attr(1, 0x00089006, b"\x00\x00\x01\x00")
    out += attr(1, 0x00069007, struct.pack("<II", 1252, 0))
    out += attr(1, 0x00078008, b"IPM.Microsoft Mail.Note\x00")
    when = struct.pack("<7H", 2026, 11, 16, 9, 0, 0, 1)
    for name, data in files:
        out += attr(2, 0x00069002, struct.pack("<HIHHI", 1, 0xFFFFFFFF, 0xFFFF, 0xFFFF, 0))
        out += attr(2, 0x00018010, name.encode("cp1252") + b"\x00")
        out += attr(2, 0x00038012, when)
        out += attr(2, 0x00038013, when)
        out += attr(2, 0x0006800F, data)
        out += attr(2, 0x00069005, b"")
    return out

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
ODT = "application/vnd.oasis.opendocument.text"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

def auth(domain, result="pass", server="mx.example.com"):
    return f"{server}; spf=pass smtp.mailfrom={domain}; dkim=pass header.d={domain}; dmarc={result} header.from={domain}"

def mail(name, frm, subject, body, to=(DESK,), cc=(), attach=(), html=None, headers=(),
         charset="utf-8", ar="default", expect=None, reply_to=None, in_reply_to=None):
    N[0] += 1
    m = EmailMessage(policy=policy.SMTP)
    dom = frm.split("@")[1].rstrip(">")
    if ar == "default":
        m["Authentication-Results"] = auth(dom)
    elif ar:
        for h in ar:
            m["Authentication-Results"] = h
    for k, v in headers:
        m[k] = v
    m["From"] = frm
    m["To"] = ", ".join(to)
    if cc:
        m["Cc"] = ", ".join(cc)
    if reply_to:
        m["Reply-To"] = reply_to
    if charset == "iso-2022-jp":
        m["Subject"] = Header(subject, "iso-2022-jp").encode()
    else:
        m["Subject"] = subject
    m["Date"] = f"Mon, 16 Nov 2026 09:{N[0] % 60:02d}:00 +0000"
    m["Message-ID"] = f"<case-{name}@{dom}>"
    if in_reply_to:
        m["In-Reply-To"] = in_reply_to
        m["References"] = in_reply_to
    if html is not None and body is None:
        m.set_content(html, subtype="html", charset="utf-8")
    elif charset == "iso-2022-jp":
        m.set_content(body.encode("iso-2022-jp"), maintype="text", subtype="plain",
                      cte="7bit", params={"charset": "iso-2022-jp"})
    else:
        m.set_content(body)
        if html is not None:
            m.add_alternative(html, subtype="html")
    for fname, data, ctype in attach:
        main, sub = ctype.split("/")
        if main == "text":
            m.add_attachment(data.decode(), subtype=sub, filename=fname)
        else:
            m.add_attachment(data, maintype=main, subtype=sub, filename=fname)
    # MIME boundaries come from `random`: seeded per case, a re-run writes the same bytes.
    random.seed(name)
    with open(os.path.join(OUT, name + ".eml"), "wb") as f:
        f.write(m.as_bytes())
    with open(os.path.join(OUT, name + ".expect.yaml"), "w") as f:
        f.write(expect.strip() + "\n")

def raw(name, data, expect):
    with open(os.path.join(OUT, name + ".eml"), "wb") as f:
        f.write(data)
    with open(os.path.join(OUT, name + ".expect.yaml"), "w") as f:
        f.write(expect.strip() + "\n")

B_ACME = "[rep.one@example.com, isr.one@example.com, cam.east@example.com, partnerorderops@example.com]"
HUMAN = "respond: none\nhuman: true\noutgoing: []\ndiscloses_nothing: true"

# Cases captured from real servers rather than generated here: kept as they are.
CAPTURED = ("bait-bounce-of-our-reply.",)

def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.startswith(CAPTURED):
            continue
        if f.endswith((".eml", ".expect.yaml")):
            os.remove(os.path.join(OUT, f))

    # ---- English, case B and A ------------------------------------------------------
    mail("en-quote-request-direct", "Alice Buyer <alice@reseller.example>",
         "Quote request - Acme Corp, 250 Premium seats",
         "Hi team,\n\nCould you please send us a quote for 250 Premium seats for Acme Corp?\n"
         "Opportunity: 0065e00000AbCdEAAX\n\nThanks,\nAlice\n-- \nAlice Buyer | Reseller Example Inc",
         expect=f"""
category: quote_request
rule: quote-request
respond: auto
fields: {{opportunity_id: 0065e00000AbCdEAAX}}
outgoing:
  - kind: reply
    to: [alice@reseller.example]
    cc: {B_ACME}
    template: quote_request_routed
    subject: "Re: Quote request - Acme Corp, 250 Premium seats"
    attachments: []
""")
    mail("en-quote-request-ops-copied", "Alice Buyer <alice@reseller.example>",
         "Quote for Acme renewal", "Hello,\n\nPlease quote the renewal for Acme Corp (Q-100234).\n\nAlice",
         to=("PartnerOrderOps@Example.com",), cc=(DESK,),
         expect="""
category: quote_request
rule: quote-request-order-ops-copied
respond: auto
outgoing:
  - kind: reply
    to: [alice@reseller.example]
    cc: []
    template: quote_request_ops_copied
    attachments: []
""")
    mail("en-purchase-order-direct", "Alice Buyer <alice@reseller.example>", "PO 4500012345 for Acme Corp",
         "Hello,\n\nPlease find attached our purchase order 4500012345 for quote Q-100234.\n\nBest regards,\nAlice",
         attach=[("PO-4500012345.pdf", pdf("PO 4500012345"), "application/pdf"),
                 ("Terms.docx", docx(["General terms of purchase", "Payment: 30 days net"]), DOCX)],
         expect=f"""
category: purchase_order
rule: purchase-order
respond: auto
fields: {{quote_number: Q-100234}}
outgoing:
  - kind: reply
    to: [alice@reseller.example]
    cc: {B_ACME}
    template: purchase_order_routed
    attachments: [PO-4500012345.pdf, Terms.docx]
""")
    mail("en-purchase-order-ops-copied", "Alice Buyer <alice@reseller.example>", "New PO - Globex",
         "Hi, our PO for Globex is attached.\nAlice", to=(OPS,), cc=(DESK,),
         attach=[("PO-77.pdf", pdf("PO 77"), "application/pdf")],
         expect="""
category: purchase_order
rule: purchase-order-order-ops-copied
respond: auto
outgoing:
  - {kind: reply, to: [alice@reseller.example], cc: [], template: purchase_order_ops_copied, attachments: []}
""")
    mail("en-order-status-direct-blank-isr", "Alice Buyer <alice@reseller.example>", "Order status?",
         "Hi,\n\nWhat is the status of our order for Globex (quote Q-100301)? The customer is waiting for the licenses.\n\nAlice",
         expect="""
category: order_status
rule: order-status
respond: auto
outgoing:
  - kind: reply
    to: [alice@reseller.example]
    cc: [rep.two@example.com, cam.central@example.com, partnerorderops@example.com]
    template: order_status_routed
""")
    mail("en-order-status-ops-copied", "Alice Buyer <alice@reseller.example>", "Where is our order?",
         "Hi, where is our order for Acme? Nothing received yet.", cc=(OPS,),
         expect="""
category: order_status
rule: order-status-order-ops-copied
respond: auto
outgoing:
  - {kind: reply, to: [alice@reseller.example], cc: [], template: order_status_ops_copied}
""")
    # ---- German ------------------------------------------------------------------------------
    mail("de-angebot-direct-customer-name", "Max Mustermann <max@partner.example>", "Angebotsanfrage Premium",
         "Hallo zusammen,\n\nbitte senden Sie uns ein Angebot über 100 Premium-Lizenzen.\nKunde: Müller Maschinenbau AG\n\nVielen Dank\nMax",
         expect="""
category: quote_request
rule: quote-request
respond: auto
fields: {customer_name: Müller Maschinenbau AG}
outgoing:
  - kind: reply
    to: [max@partner.example]
    cc: [rep.dach@example.com, isr.dach@example.com, cam.dach@example.com, partnerorderops@example.com]
    template: quote_request_routed
""")
    mail("de-bestellung-direct", "Max Mustermann <max@partner.example>", "Bestellung Müller Maschinenbau",
         "Guten Tag,\n\nanbei unsere Bestellung zum Angebot Q-200111.\n\nMit freundlichen Grüßen\nMax",
         attach=[("Bestellung_2026-118.pdf", pdf("Bestellung"), "application/pdf")],
         expect="""
category: purchase_order
rule: purchase-order
respond: auto
outgoing:
  - kind: reply
    to: [max@partner.example]
    cc: [rep.dach@example.com, isr.dach@example.com, cam.dach@example.com, partnerorderops@example.com]
    attachments: [Bestellung_2026-118.pdf]
""")
    mail("de-bestellstatus-ops-copied", "Max Mustermann <max@partner.example>", "Bestellstatus",
         "Hallo,\n\nwie ist der Stand der Bestellung für Müller Maschinenbau?\n\nGruß Max", cc=("partnerorderops@example.com",),
         expect="""
category: order_status
rule: order-status-order-ops-copied
respond: auto
outgoing:
  - {kind: reply, to: [max@partner.example], cc: []}
""")
    # ---- French ------------------------------------------------------------------------------
    mail("fr-devis-direct", "Claire Dubois <claire@revendeur.example>", "Demande de devis",
         "Bonjour,\n\nPourriez-vous nous envoyer un devis pour l'opportunité 0065e00000UvWxYAAB ?\n\nCordialement,\nClaire",
         expect="""
category: quote_request
rule: quote-request
respond: auto
outgoing:
  - kind: reply
    to: [claire@revendeur.example]
    cc: [rep.fr@example.com, isr.fr@example.com, cam.france@example.com, partnerorderops@example.com]
""")
    mail("fr-bon-de-commande-ops-copied", "Claire Dubois <claire@revendeur.example>", "Bon de commande Logistique Durand",
         "Bonjour,\n\nVeuillez trouver ci-joint notre bon de commande.\n\nClaire", to=(OPS, DESK),
         attach=[("Bon_de_commande_8812.pdf", pdf("BC 8812"), "application/pdf")],
         expect="""
category: purchase_order
rule: purchase-order-order-ops-copied
respond: auto
outgoing:
  - {kind: reply, to: [claire@revendeur.example], cc: [], attachments: []}
""")
    mail("fr-statut-commande-direct", "Claire Dubois <claire@revendeur.example>", "Suivi",
         "Bonjour,\n\nPouvez-vous me donner le statut de notre commande (devis Q-300222) ?\n\nMerci,\nClaire",
         expect="""
category: order_status
respond: auto
outgoing:
  - kind: reply
    to: [claire@revendeur.example]
    cc: [rep.fr@example.com, isr.fr@example.com, cam.france@example.com, partnerorderops@example.com]
""")
    # ---- Portuguese ---------------------------------------------------------------------------
    mail("pt-cotacao-direct", "João Silva <joao@parceiro.example>", "Solicitação de cotação",
         "Olá,\n\nGostaríamos de receber uma cotação para 50 licenças Premium.\nCliente: Banco Horizonte\n\nObrigado,\nJoão",
         expect="""
category: quote_request
respond: auto
outgoing:
  - kind: reply
    to: [joao@parceiro.example]
    cc: [rep.br@example.com, isr.br@example.com, cam.latam@example.com, partnerorderops@example.com]
""")
    mail("pt-pedido-de-compra-direct", "João Silva <joao@parceiro.example>", "Pedido de compra - Banco Horizonte",
         "Olá,\n\nSegue em anexo o pedido de compra referente à cotação Q-400333.\n\nAtt,\nJoão",
         attach=[("Pedido_Compra_5521.pdf", pdf("Pedido 5521"), "application/pdf")],
         expect="""
category: purchase_order
respond: auto
outgoing:
  - kind: reply
    to: [joao@parceiro.example]
    cc: [rep.br@example.com, isr.br@example.com, cam.latam@example.com, partnerorderops@example.com]
    attachments: [Pedido_Compra_5521.pdf]
""")
    mail("pt-status-pedido-ops-copied", "João Silva <joao@parceiro.example>", "Status do pedido",
         "Olá, qual é o status do pedido do Banco Horizonte?\nJoão", cc=(OPS,),
         expect="""
category: order_status
rule: order-status-order-ops-copied
outgoing:
  - {kind: reply, to: [joao@parceiro.example], cc: []}
""")
    # ---- Japanese (ISO-2022-JP) -----------------------------------------------------------------
    mail("ja-mitsumori-direct", "山田 太郎 <yamada@hanbai.example>", "お見積りのお願い",
         "いつもお世話になっております。\n\nUltimate 30ライセンスのお見積りをお願いいたします。\n顧客名：Yamato Seiki\n\nよろしくお願いいたします。\n山田",
         charset="iso-2022-jp",
         expect="""
category: quote_request
respond: auto
fields: {customer_name: Yamato Seiki}
outgoing:
  - kind: reply
    to: [yamada@hanbai.example]
    cc: [rep.jp@example.com, isr.jp@example.com, cam.japan@example.com, partnerorderops@example.com]
    subject: "Re: お見積りのお願い"
""")
    mail("ja-chumonsho-direct", "山田 太郎 <yamada@hanbai.example>", "注文書送付の件",
         "お世話になっております。\n\n見積番号 Q-500444 の注文書を添付いたします。\n\n山田", charset="iso-2022-jp",
         attach=[("注文書_2026.pdf", pdf("chumonsho"), "application/pdf")],
         expect="""
category: purchase_order
respond: auto
outgoing:
  - kind: reply
    to: [yamada@hanbai.example]
    cc: [rep.jp@example.com, isr.jp@example.com, cam.japan@example.com, partnerorderops@example.com]
    attachments: [注文書_2026.pdf]
""")
    mail("ja-status-ops-copied", "山田 太郎 <yamada@hanbai.example>", "注文状況の確認",
         "お世話になっております。先日の注文の状況を教えてください。", charset="iso-2022-jp", cc=(OPS,),
         expect="""
category: order_status
rule: order-status-order-ops-copied
outgoing:
  - {kind: reply, to: [yamada@hanbai.example], cc: []}
""")
    # ---- Service Attach PoE (procedure C) ------------------------------------------------------
    poe_fwd = """
  - kind: forward
    to: [{cm}]
    cc: []
    template: poe_channel_manager
    attachments: {att}
  - kind: reply
    to: [{to}]
    cc: []
    template: poe_submitted
"""
    mail("poe-complete-en", "Alice Buyer <alice@reseller.example>", "PoE - Acme Corp services",
         "Hello,\n\nAttached is the proof of execution for our services at Acme.\n\n"
         "Partner Name: Reseller Example Inc\nCustomer Name: Acme Corp\nService Attach Deal ID: DR-2026-0042\n\nAlice",
         attach=[("PoE_Acme.pdf", pdf("PoE Acme"), "application/pdf")],
         expect="""
category: proof_of_execution
rule: proof-of-execution
respond: auto
fields: {partner_name: Reseller Example Inc, customer_name: Acme Corp, deal_id: DR-2026-0042}
missing: []
outgoing:""" + poe_fwd.format(cm="cam.east@example.com", att="[PoE_Acme.pdf]", to="alice@reseller.example"))
    mail("poe-missing-customer-en", "Alice Buyer <alice@reseller.example>", "Proof of Execution",
         "Hi,\n\nPlease find our proof of execution attached.\nPartner Name: Reseller Example Inc\nDeal ID: DR-2026-0042\n\nAlice",
         attach=[("ProofOfExecution.pdf", pdf("PoE"), "application/pdf")],
         expect="""
category: proof_of_execution
respond: auto
missing: [customer_name]
outgoing:
  - kind: reply
    to: [alice@reseller.example]
    cc: []
    template: poe_missing_fields
    attachments: []
    body_contains: ["Customer Name"]
""")
    mail("poe-blank-customer-field", "Alice Buyer <alice@reseller.example>", "SOW for Acme",
         "Hello,\n\nStatement of work attached.\n\nPartner Name: Reseller Example Inc\nCustomer Name:\nService Attach Deal ID: DR-2026-0042\n",
         attach=[("SOW.pdf", pdf("SOW"), "application/pdf")],
         expect="""
category: proof_of_execution
missing: [customer_name]
outgoing:
  - {kind: reply, to: [alice@reseller.example], cc: [], template: poe_missing_fields}
""")
    mail("poe-fields-in-text-document", "Alice Buyer <alice@reseller.example>", "PoE",
         "Hello, our PoE is attached.\nAlice",
         attach=[("poe-details.txt", b"Partner Name: Reseller Example Inc\nCustomer Name: Acme Corp\nService Attach Deal ID: DR-2026-0042\n", "text/plain")],
         expect="""
category: proof_of_execution
respond: auto
missing: []
outgoing:""" + poe_fwd.format(cm="cam.east@example.com", att="[poe-details.txt]", to="alice@reseller.example"))
    mail("poe-de-complete", "Max Mustermann <max@partner.example>", "Leistungsnachweis Service Attach",
         "Hallo,\n\nanbei der Leistungsnachweis.\n\nPartnername: Partner Example GmbH\nKundenname: Müller Maschinenbau AG\nDeal-ID: DR-2026-0050\n\nGruß Max",
         attach=[("Leistungsnachweis.pdf", pdf("LN"), "application/pdf")],
         expect="""
category: proof_of_execution
respond: auto
outgoing:""" + poe_fwd.format(cm="cam.dach@example.com", att="[Leistungsnachweis.pdf]", to="max@partner.example"))
    mail("poe-fr-missing-deal-id", "Claire Dubois <claire@revendeur.example>", "Preuve d'exécution",
         "Bonjour,\n\nVoici notre preuve d'exécution.\n\nNom du partenaire : Revendeur Exemple SAS\nNom du client : Logistique Durand SA\n\nClaire",
         attach=[("preuve.pdf", pdf("preuve"), "application/pdf")],
         expect="""
category: proof_of_execution
missing: [deal_id]
outgoing:
  - {kind: reply, to: [claire@revendeur.example], cc: [], template: poe_missing_fields, body_contains: ["Service Attach Deal ID"]}
""")
    mail("poe-pt-complete", "João Silva <joao@parceiro.example>", "Prova de execução - Banco Horizonte",
         "Olá,\n\nSegue a prova de execução.\n\nNome do parceiro: Parceiro Exemplo Ltda\nNome do cliente: Banco Horizonte\nID do negócio: DR-2026-0052\n\nJoão",
         attach=[("prova_execucao.pdf", pdf("prova"), "application/pdf")],
         expect="""
category: proof_of_execution
respond: auto
outgoing:""" + poe_fwd.format(cm="cam.latam@example.com", att="[prova_execucao.pdf]", to="joao@parceiro.example"))
    mail("poe-ja-complete", "山田 太郎 <yamada@hanbai.example>", "実施証明書の送付",
         "お世話になっております。\n\n実施証明書を添付いたします。\n\nパートナー名：Hanbai Example KK\n顧客名：Yamato Seiki\n案件ID：DR-2026-0053\n\n山田",
         charset="iso-2022-jp", attach=[("実施証明書.pdf", pdf("jisshi"), "application/pdf")],
         expect="""
category: proof_of_execution
respond: auto
outgoing:""" + poe_fwd.format(cm="cam.japan@example.com", att="[実施証明書.pdf]", to="yamada@hanbai.example"))
    mail("poe-registration-already-closed", "Alice Buyer <alice@reseller.example>", "PoE Globex",
         "Hello,\nPoE attached.\nPartner Name: Reseller Example Inc\nCustomer Name: Globex\nService Attach Deal ID: DR-2026-0060\n",
         attach=[("PoE_Globex.pdf", pdf("PoE Globex"), "application/pdf")],
         expect=f"category: proof_of_execution\nreason_contains: Closed-Won\n{HUMAN}")
    mail("poe-other-partners-deal", "Alice Buyer <alice@reseller.example>", "PoE Umbrella",
         "Hello,\nPoE attached.\nPartner Name: Reseller Example Inc\nCustomer Name: Umbrella Corp\nService Attach Deal ID: DR-2026-0070\n",
         attach=[("PoE_Umbrella.pdf", pdf("PoE Umbrella"), "application/pdf")],
         expect=f"category: proof_of_execution\nreason_contains: belongs to partner\n{HUMAN}")
    # ---- Fields only in the attached document (PDF, DOCX, ODT, XLSX), several languages -------
    mail("doc-poe-fields-only-in-pdf-en", "Alice Buyer <alice@reseller.example>", "PoE Acme",
         "Hello,\n\nour proof of execution is attached.\n\nAlice",
         attach=[("PoE_Acme_signed.pdf", pdf("Proof of Execution", ["Partner Name: Reseller Example Inc",
                  "Customer Name: Acme Corp", "Service Attach Deal ID: DR-2026-0042", "Signed: A. Buyer"]), PDF)],
         expect="""
category: proof_of_execution
respond: auto
fields: {partner_name: Reseller Example Inc, customer_name: Acme Corp, deal_id: DR-2026-0042}
missing: []
outgoing:""" + poe_fwd.format(cm="cam.east@example.com", att="[PoE_Acme_signed.pdf]", to="alice@reseller.example"))
    mail("doc-poe-fields-only-in-docx-de", "Max Mustermann <max@partner.example>", "Leistungsnachweis",
         "Hallo,\n\nanbei der Leistungsnachweis.\n\nGruß Max",
         attach=[("Leistungsnachweis.docx", docx(["Leistungsnachweis Service Attach", "Partnername: Partner Example GmbH",
                  "Kundenname: Müller Maschinenbau AG", "Deal-ID: DR-2026-0050"]), DOCX)],
         expect="""
category: proof_of_execution
respond: auto
fields: {customer_name: Müller Maschinenbau AG, deal_id: DR-2026-0050}
outgoing:""" + poe_fwd.format(cm="cam.dach@example.com", att="[Leistungsnachweis.docx]", to="max@partner.example"))
    mail("doc-poe-fields-only-in-odt-fr", "Claire Dubois <claire@revendeur.example>", "Preuve d'exécution",
         "Bonjour,\n\nveuillez trouver notre preuve d'exécution en pièce jointe.\n\nClaire",
         attach=[("preuve_execution.odt", odt(["Preuve d'exécution", "Nom du partenaire : Revendeur Exemple SAS",
                  "Nom du client : Logistique Durand SA", "ID du deal : DR-2026-0051"]), ODT)],
         expect="""
category: proof_of_execution
respond: auto
fields: {customer_name: Logistique Durand SA, deal_id: DR-2026-0051}
outgoing:""" + poe_fwd.format(cm="cam.france@example.com", att="[preuve_execution.odt]", to="claire@revendeur.example"))
    mail("doc-poe-fields-only-in-xlsx-pt", "João Silva <joao@parceiro.example>", "Prova de execução",
         "Olá,\n\nsegue a prova de execução em anexo.\n\nJoão",
         attach=[("prova_execucao.xlsx", xlsx([("Prova de execução",), ("Nome do parceiro", "Parceiro Exemplo Ltda"),
                  ("Nome do cliente", "Banco Horizonte"), ("ID do negócio", "DR-2026-0052")]), XLSX)],
         expect="""
category: proof_of_execution
respond: auto
fields: {customer_name: Banco Horizonte, deal_id: DR-2026-0052}
outgoing:""" + poe_fwd.format(cm="cam.latam@example.com", att="[prova_execucao.xlsx]", to="joao@parceiro.example"))
    mail("doc-poe-fields-only-in-docx-ja", "山田 太郎 <yamada@hanbai.example>", "実施証明書",
         "お世話になっております。\n\n実施証明書を添付いたします。\n\n山田",
         attach=[("実施証明書.docx", docx(["実施証明書", "パートナー名：Hanbai Example KK", "顧客名：Yamato Seiki",
                  "案件ID：DR-2026-0053"]), DOCX)],
         expect="""
category: proof_of_execution
respond: auto
fields: {customer_name: Yamato Seiki, deal_id: DR-2026-0053}
outgoing:""" + poe_fwd.format(cm="cam.japan@example.com", att="[実施証明書.docx]", to="yamada@hanbai.example"))
    mail("doc-poe-pdf-without-customer-en", "Alice Buyer <alice@reseller.example>", "PoE",
         "Hello,\n\nPoE attached.\n\nAlice",
         attach=[("PoE.pdf", pdf("Proof of Execution", ["Partner Name: Reseller Example Inc",
                  "Customer Name:", "Service Attach Deal ID: DR-2026-0042"]), PDF)],
         expect="""
category: proof_of_execution
respond: auto
missing: [customer_name]
outgoing:
  - {kind: reply, to: [alice@reseller.example], cc: [], template: poe_missing_fields, attachments: [], body_contains: ["Customer Name"]}
""")
    mail("doc-po-quote-only-in-pdf", "Alice Buyer <alice@reseller.example>", "Purchase order",
         "Hello,\n\nplease find our purchase order attached.\n\nAlice",
         attach=[("PO-4500012399.pdf", pdf("PURCHASE ORDER 4500012399", ["Vendor quote number: Q-100234",
                  "Item: Premium seats x 250"]), PDF)],
         expect=f"""
category: purchase_order
rule: purchase-order
respond: auto
fields: {{quote_number: Q-100234}}
outgoing:
  - kind: reply
    to: [alice@reseller.example]
    cc: {B_ACME}
    template: purchase_order_routed
    attachments: [PO-4500012399.pdf]
""")
    mail("doc-po-in-winmail-dat", "Alice Buyer <alice@reseller.example>", "PO for Acme",
         "Hello,\n\nour purchase order for quote Q-100234 is attached.\n\nAlice",
         attach=[("winmail.dat", tnef([("PO-4500012400.pdf", pdf("PURCHASE ORDER 4500012400", ["Quote: Q-100234"]))]),
                  "application/ms-tnef")],
         expect=f"""
category: purchase_order
respond: auto
outgoing:
  - kind: reply
    to: [alice@reseller.example]
    cc: {B_ACME}
    template: purchase_order_routed
    attachments: [PO-4500012400.pdf]
""")
    from reportlab.lib.pdfencrypt import StandardEncryption
    mail("doc-poe-encrypted-pdf", "Alice Buyer <alice@reseller.example>", "PoE (protected)",
         "Hello,\n\nPoE attached; the password follows separately.\n\nAlice",
         attach=[("PoE_protected.pdf", pdf("Proof of Execution", ["Customer Name: Acme Corp"],
                  encrypt=StandardEncryption("s3cret-partner", ownerPassword="owner", canPrint=0)), PDF)],
         expect=f"category: proof_of_execution\nreason_contains: PoE_protected.pdf\n{HUMAN}")
    mail("doc-poe-scanned-pdf", "Alice Buyer <alice@reseller.example>", "PoE scan",
         "Hello,\n\nthe signed PoE is attached as a scan.\n\nAlice",
         attach=[("PoE_scan.pdf", pdf("", scan=True), PDF)],
         expect=f"category: proof_of_execution\nreason_contains: no text layer\n{HUMAN}")
    whole = pdf("Proof of Execution", ["Partner Name: Reseller Example Inc", "Customer Name: Acme Corp",
                "Service Attach Deal ID: DR-2026-0042"])
    mail("doc-poe-corrupted-pdf", "Alice Buyer <alice@reseller.example>", "PoE Acme",
         "Hello,\n\nPoE attached.\n\nAlice",
         attach=[("PoE_Acme.pdf", whole[: len(whole) // 2], PDF)],
         expect=f"category: proof_of_execution\nreason_contains: PoE_Acme.pdf\n{HUMAN}")
    # ---- Lookups that must not guess ---------------------------------------------------------
    mail("quote-ambiguous-customer", "Alice Buyer <alice@reseller.example>", "Quote needed",
         "Hi,\n\nWe need a quote for more seats.\nCustomer: Initech\n\nAlice",
         expect=f"category: quote_request\nreason_contains: ambiguous\n{HUMAN}")
    mail("quote-no-evidence", "Alice Buyer <alice@reseller.example>", "Pricing question",
         "Hi, can you send me a quote for 10 seats? Thanks",
         expect=f"category: quote_request\n{HUMAN}")
    mail("po-other-partners-opportunity", "Alice Buyer <alice@reseller.example>", "PO for Umbrella",
         "Hello,\nAttached is our PO for opportunity 0065e00000JkLmNAAE.\nAlice",
         attach=[("PO-Umbrella.pdf", pdf("PO U"), "application/pdf")],
         expect=f"category: purchase_order\nreason_contains: belongs to partner\n{HUMAN}")
    # ---- HTML-only Outlook mail, forwards with quoted history -----------------------------------
    mail("html-only-outlook-quote", "Alice Buyer <alice@reseller.example>", "RE: Acme",
         None, html=("<html><body><div>Hi team,<br><br>Could you send a quotation for the Acme expansion? "
                     "Opportunity 0065e00000AbCdEAAX.<br><br>Thanks<br>Alice</div>"
                     "<div id=divRplyFwdMsg><hr><b>From:</b> Bob &lt;bob@reseller.example&gt;<br><b>Sent:</b> Monday<br>"
                     "<b>To:</b> Alice<br><b>Subject:</b> Acme<br><br>Our purchase order status: the PO is attached.</div></body></html>"),
         expect=f"""
category: quote_request
rule: quote-request
outgoing:
  - kind: reply
    to: [alice@reseller.example]
    cc: {B_ACME}
    subject: "RE: Acme"
""")
    mail("forward-quoted-po-history-portal-question", "Alice Buyer <alice@reseller.example>", "Fwd: PO 4500012345",
         "Hi,\n\nI can't log in to the partner portal to check this, can you reset my password?\n\nAlice\n\n"
         "---------- Forwarded message ---------\nFrom: Bob <bob@reseller.example>\nDate: Fri, 13 Nov 2026\nSubject: PO 4500012345\n\n"
         "Please find the purchase order attached and confirm the order status.\n",
         expect="""
category: portal_access
rule: portal-access
outgoing:
  - {kind: reply, to: [alice@reseller.example], cc: [], template: portal_access}
""")
    mail("reply-quoted-quote-history-deal-reg", "Max Mustermann <max@partner.example>", "AW: Angebot",
         "Danke! Wie registriere ich jetzt die Deal-Registrierung im Portal?\n\nAm 12.11.2026 um 10:00 schrieb Support <partnersupport@example.com>:\n> Ihr Angebot ist unterwegs.\n",
         expect="""
category: deal_registration
outgoing:
  - {kind: reply, to: [max@partner.example], cc: [], template: deal_registration}
""")
    # ---- The desk's other topics ---------------------------------------------------------------
    simple = [
        ("portal-access-en", "alice@reseller.example", "Portal login", "Hi, I cannot log in to the partner portal, my account seems locked. Can you help?", "portal_access", "portal_access"),
        ("portal-access-de", "max@partner.example", "Passwort", "Hallo, ich kann mich nicht anmelden. Bitte Passwort zurücksetzen.", "portal_access", "portal_access"),
        ("portal-access-pt", "joao@parceiro.example", "Acesso ao portal", "Olá, não consigo acessar o portal de parceiros.", "portal_access", "portal_access"),
        ("deal-registration-fr", "claire@revendeur.example", "Enregistrement d'affaire", "Bonjour, comment enregistrer une affaire pour un nouveau client ?", "deal_registration", "deal_registration"),
        ("deal-registration-ja", "yamada@hanbai.example", "案件登録について", "案件登録の方法を教えてください。", "deal_registration", "deal_registration"),
        ("nfr-en", "alice@reseller.example", "NFR seats", "Hi, we were told we have too many seats in our NFR subscription. How do we reduce them?", "nfr", "nfr_seat_reduction"),
        ("invoice-pt", "joao@parceiro.example", "Fatura", "Olá, poderiam enviar a fatura de outubro?", "invoice", "invoice"),
        ("invoice-de", "max@partner.example", "Rechnungskopie", "Hallo, bitte senden Sie uns eine Kopie der Rechnung vom 1. Oktober.", "invoice", "invoice"),
        ("certification-report-en", "alice@reseller.example", "Certification report", "Hi, can you send the certification report for our team? We need to know who is certified.", "certification_report", "certification_report"),
        ("certification-report-fr", "claire@revendeur.example", "Certifications", "Bonjour, pouvez-vous m'envoyer le rapport de certification de notre équipe ?", "certification_report", "certification_report"),
        ("billing-en", "alice@reseller.example", "Billing account", "Hello, we need to update the billing contact and the credit card on our billing account.", "billing", "billing_out_of_scope"),
    ]
    for name, frm, subj, body, cat, tmpl in simple:
        cs = "iso-2022-jp" if frm.endswith("hanbai.example") else "utf-8"
        mail(name, frm, subj, body, charset=cs, expect=f"""
category: {cat}
respond: auto
discloses_nothing: true
outgoing:
  - {{kind: reply, to: [{frm}], cc: [], template: {tmpl}}}
""")
    mail("other-lunch", "Alice Buyer <alice@reseller.example>", "Lunch next week?",
         "Hi Kim, are you free for lunch on Thursday?", expect=f"category: other\nrule: anything-else\n{HUMAN}")

    # ---- Loop bait: never an automatic answer ------------------------------------------------------
    bait_q = "Please send us a quote for Acme Corp, opportunity 0065e00000AbCdEAAX."
    mail("bait-out-of-office", "Alice Buyer <alice@reseller.example>", "Automatic reply: Quote request",
         "I am out of the office until Monday. " + bait_q, headers=[("Auto-Submitted", "auto-replied")],
         expect=f"reason_contains: Auto-Submitted\n{HUMAN}")
    mail("bait-outlook-oof", "Alice Buyer <alice@reseller.example>", "Out of Office: quote",
         "Out of office. " + bait_q, headers=[("X-Auto-Response-Suppress", "All")],
         expect=f"reason_contains: X-Auto-Response-Suppress\n{HUMAN}")
    mail("bait-mailing-list", "Partner News <news@reseller.example>", "Weekly pricing update: new quote tool",
         bait_q, headers=[("List-Id", "<news.reseller.example>"), ("Precedence", "list")],
         expect=f"{HUMAN}")
    mail("bait-bulk", "Alice Buyer <alice@reseller.example>", "Quote campaign", bait_q, headers=[("Precedence", "bulk")],
         expect=f"reason_contains: Precedence\n{HUMAN}")
    mail("bait-noreply-sender", "Reseller Portal <no-reply@reseller.example>", "Quote request created", bait_q,
         expect=f"reason_contains: automated sender\n{HUMAN}")
    mail("bait-desk-own-mail", "Partner Help Desk <partnersupport@example.com>", "Re: Quote request", bait_q,
         ar=[auth("example.com")], expect=f"reason_contains: own address\n{HUMAN}")
    mail("bait-reply-to-our-answer", "Alice Buyer <alice@reseller.example>", "Re: Re: Quote request",
         "Thanks! One more question on the quote. " + bait_q, in_reply_to="<a1b2c3.reply@triage.example.com>",
         expect=f"reason_contains: already answered\n{HUMAN}")
    # A bounce: multipart/report from MAILER-DAEMON with an empty Return-Path.
    bounce = (b"Return-Path: <>\r\nAuthentication-Results: mx.example.com; dmarc=none\r\n"
              b"From: Mail Delivery System <MAILER-DAEMON@mail.reseller.example>\r\nTo: partnersupport@example.com\r\n"
              b"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <bounce-1@mail.reseller.example>\r\n"
              b"Date: Mon, 16 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
              b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n"
              b"--b1\r\nContent-Type: text/plain\r\n\r\nYour quote request could not be delivered.\r\n"
              b"--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mail.reseller.example\r\n\r\n"
              b"Final-Recipient: rfc822; nobody@reseller.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b1--\r\n")
    # Somebody else's bounce: nobody is blocked (bait-bounce-of-our-reply, captured from
    # Postfix, is the one about our own reply).
    raw("bait-bounce-dsn", bounce, f"{HUMAN}\nbounced: []")
    # ---- Trust: unverified or spoofed senders ------------------------------------------------------
    mail("trust-dmarc-fail", "Alice Buyer <alice@reseller.example>", "Quote request Acme", bait_q,
         ar=[auth("reseller.example", "fail")], expect=f"category: quote_request\nreason_contains: DMARC fail\n{HUMAN}")
    mail("trust-no-authentication-results", "Alice Buyer <alice@reseller.example>", "Quote request Acme", bait_q,
         ar=None, expect=f"category: quote_request\nreason_contains: not verified\n{HUMAN}")
    mail("trust-forged-other-server", "Alice Buyer <alice@reseller.example>", "Quote request Acme", bait_q,
         ar=[auth("reseller.example", "pass", server="mx.attacker.example")],
         expect=f"category: quote_request\n{HUMAN}")
    mail("trust-forged-copy-below-real", "Alice Buyer <alice@reseller.example>", "Quote request Acme", bait_q,
         ar=[auth("reseller.example", "fail"), auth("reseller.example", "pass")],
         expect=f"category: quote_request\nreason_contains: DMARC fail\n{HUMAN}")
    mail("trust-reply-to-other-domain", "Alice Buyer <alice@reseller.example>", "Quote request Acme", bait_q,
         reply_to="alice@freemail.example", expect=f"category: quote_request\nreason_contains: Reply-To\n{HUMAN}")
    mail("trust-lookalike-domain", "Alice Buyer <alice@reseIler.example>", "Quote request Acme", bait_q,
         expect=f"category: quote_request\nreason_contains: belongs to partner\n{HUMAN}")
    # ---- Broken input -------------------------------------------------------------------------------
    raw("broken-empty", b"", f"{HUMAN}\nreason_contains: empty")
    raw("broken-garbage", b"\x00\x01\x02 this is not a message \xff\xfe\r\n\r\n\r\n", f"{HUMAN}")
    raw("broken-truncated-multipart",
        b"Authentication-Results: mx.example.com; dmarc=pass header.from=reseller.example\r\n"
        b"From: alice@reseller.example\r\nTo: partnersupport@example.com\r\nSubject: PO attached\r\n"
        b"Message-ID: <trunc-1@reseller.example>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"zz\"\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\n"
        b"Our purchase order is attached.\r\n--zz\r\nContent-Type: application/pdf; name=\"PO.pdf\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK!!!!not-base64",
        "category: purchase_order\nrespond: none\nhuman: true\noutgoing: []")
    print(f"wrote {N[0]} generated cases and the raw ones to {os.path.normpath(OUT)}")

if __name__ == "__main__":
    main()
