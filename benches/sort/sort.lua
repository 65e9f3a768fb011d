-- The benchmark's sort job for imapfilter: the same rules as benches/sort/rules/10-sort.yaml.
-- Connection from the environment (set by benches/versus.rs).
options.timeout = 120
options.create = true
options.subscribe = false
options.expunge = true
options.starttls = false    -- plain on loopback, as the triage config says explicitly

local account = IMAP {
  server = '127.0.0.1',
  port = tonumber(os.getenv('SORT_PORT')),
  username = os.getenv('SORT_USER'),
  password = os.getenv('SORT_PASSWORD'),
}

local rules = {
  { 'Sort/Orders', '(?i)purchase order|bestellung|bon de commande|pedido de compra|注文書' },
  { 'Sort/Status', '(?i)order status|where is our order|bestellstatus|statut de la commande|status do pedido' },
  { 'Sort/PoE', '(?i)proof of execution|leistungsnachweis|preuve d.ex[eé]cution|prova de execu[cç][aã]o|実施証明' },
  { 'Sort/Quotes', '(?i)quote|quotation|angebot|devis|cota[cç][aã]o|見積' },
}

for _, rule in ipairs(rules) do
  local folder, re = rule[1], rule[2]
  local hits = account.INBOX:match_subject(re) + account.INBOX:match_body(re)
  hits:move_messages(account[folder])
end
account.INBOX:select_all():move_messages(account['Sort/Other'])
