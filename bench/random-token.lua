-- wrk script: every request carries one of TOKENS distinct bearer tokens.
-- MODE=seq walks them in order (to fill the cache), MODE=random picks at random.
local tokens = tonumber(os.getenv("TOKENS") or "100000")
local mode = os.getenv("MODE") or "random"
local i = 0

request = function()
  local n
  if mode == "seq" then
    i = i % tokens + 1
    n = i
  else
    n = math.random(tokens)
  end
  return wrk.format("GET", nil, { ["Authorization"] = "Bearer bench-token-" .. n })
end
